"""Jobs: the task model and ledger, the executor, and the kinds of work (script, ocr, analytics)."""
