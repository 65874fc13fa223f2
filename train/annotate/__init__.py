"""`python -m train.annotate`: the LLM labels the classifier learns from.

sample.py draws the documents, prompt.py makes the question and reads the answer, client.py
asks the endpoint (concurrency, rate, retries), store.py is the output directory (parts,
resume, settings, stats), job.py runs the three together, __main__.py parses the flags.
"""
