"""The request flows, shared by every front end: the web UI (ui/), the terminal (cli/) and bench/bench_queue.py.

One implementation of each thing a user can ask the service to do, from plain values to plain values:

- `flows.chat`: conversations; send a message (store it and a pending reply, then enqueue the reply or mark
  it failed), retry a failed reply, poll a reply, read the history.
- `flows.questions`: ask a question about a passage (store, then enqueue or mark failed), read the result.
- `flows.batch`: read and parse an upload, submit a job (store, then enqueue or mark failed), status, list,
  cancel, results.
- `flows.uploads`: batch files (JSONL, CSV, SQuAD JSON) -> items and per-line errors (pure parsing).
- `flows.exports`: a job's results as JSONL, CSV and SQuAD predictions JSON.

A flow stores rows through `storage` in its own `transaction()`, and talks to the workers only through
`workers.client`, after the commit. It takes the database as an `EngineSource` (a function returning the
caller's engine, called only once the checks that need no database have passed, so a command that fails for
want of a worker creates no schema) and reads its bounds from `settings.get_settings()`. Flows never import
Gradio, argparse or torch, never print and never word an error for a user: they raise the storage, worker and
database exceptions, and each front end turns those into its own sentence.
"""
