"""Analytics on the controller: the job's options, parsed safely, and the merge of partials.

Everything here is pure: the node-side runner computes partial summaries of its chunk of
the data, and these functions combine them into one result without touching disk or network.
"""
