"""Service mode: OpenAI's files, fine-tuning jobs and evals APIs over tunekit's own stages.

``tunekit serve`` without ``--model`` serves these beside chat/completions for every fine-tuned
model, so code written for OpenAI's hosted fine-tuning keeps working with ``base_url`` pointed at
tunekit. Modules: ``files`` (uploads, validated and stored by content hash), ``catalogue`` (the
base models an admin allows), ``jobs`` (the job store and OpenAI's job object), ``queue`` (huey),
``runner`` (a job as a tunekit run), ``evals`` (evals, runs and graders) and ``app`` (the routes).
"""
