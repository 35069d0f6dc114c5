"""Facts about nodes: the probe script, its parser, psutil for `local`, and their storage."""
