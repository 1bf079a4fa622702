"""The Gradio app: Chat, Reading comprehension, Batch jobs and System tabs, plus the named API endpoints.

`build_app()` only lays out components and wires them to ui/events.py; nothing runs at import. `main()` reads
Settings, brings the database schema up to date and launches; `python -m ui.app` runs it (that is what
`s2s up` starts). Without a login each browser keeps a random owner key in encrypted localStorage
(gr.BrowserState), so its conversations survive reloads and restarts and stay invisible to other browsers.
"""

from __future__ import annotations

import logging
import secrets

import gradio as gr

from settings import Settings, get_settings
from ui import api, attention, events, handlers

logger = logging.getLogger(__name__)

OWNER_STORAGE_KEY = "s2s-owner-key"
QUEUE_SIZE_PER_SLOT = 8
CSS = """
/* the model version under each reply (ui/events.for_display): a quiet line of its own, not part of the reply */
#chatbot .model-version { font-size: 0.8em; opacity: 0.65; }
/* a dropdown's text stops short of its caret, ending in an ellipsis, instead of running under it */
input[role="combobox"] { padding-right: 28px !important; text-overflow: ellipsis; }
/* a tab's notice line (ui/events.notice): the one place a problem is said, next to where the user typed */
#workers table.workers { width: 100%; border-collapse: collapse; table-layout: auto; }
#workers .workers th, #workers .workers td { text-align: left; vertical-align: top; padding: 6px 8px;
          border-bottom: 1px solid var(--border-color-primary); }
#workers .workers td { overflow-wrap: anywhere; }  /* long names and versions break; the headers stay whole */
@media (max-width: 480px) { #workers .workers { font-size: 0.85em; } #workers .workers th, #workers .workers td { padding: 4px; } }
#batch-help pre, #batch-help code { white-space: pre-wrap; overflow-wrap: anywhere; }  /* the example, at 390 px */
.notice { color: var(--error-text-color); background: var(--error-background-fill);
          border: 1px solid var(--error-border-color); border-radius: var(--radius-md); padding: 6px 10px; }
"""
BATCH_HELP = """\
Each line needs a **`question`** and the **`passage`** it is about; an **`id`** is optional (a line without one
is named by its line number). For example, one JSONL line:

```json
{"id": "q1", "question": "Where was Bob born?", "passage": "Bob was born in Oslo."}
```

CSV: a header row with `question,passage` (and `id`). SQuAD JSON: `data` → `paragraphs` → `context`, `qas`.
"""
RC_EXAMPLES = [
    ["Bob was born in Oslo. Later Bob moved to Lima for work.", "Where was Bob born?"],
    [
        "The Gray Point lighthouse was built in 1887 by a shipwright named Ada Lund. It was painted red in 1920.",
        "Who built the lighthouse?",
    ],
    ["小明出生在杭州。后来他搬到上海工作，每个周末都去公园跑步。", "小明出生在哪里？"],
    ["这座石桥建于一九五六年，全长八百米，连接河的两岸。", "这座石桥有多长？"],
]


def browser_secret(settings: Settings) -> str:
    """The key that encrypts the owner key in the browser; kept in the data directory so restarts keep it."""
    path = settings.data_dir / "ui-browser-secret"
    try:
        secret = path.read_text(encoding="utf-8").strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(secret, encoding="utf-8")
    return secret


def _chat_tab(owner_key: gr.BrowserState) -> list[gr.components.Component]:
    """Lays out the chat tab; returns what the page load fills in (list, chat, conversation id, Retry, Stop,
    notice)."""
    settings = get_settings()
    conversation_id = gr.State("")
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            conversations = gr.Dropdown(
                label="Your conversations",
                choices=[],
                value=None,
                interactive=True,
                elem_id="conversation-list",
            )
            new_button = gr.Button("New conversation", elem_id="new-conversation")
            title = gr.Textbox(label="Title", placeholder="rename the open conversation", max_lines=1)
            with gr.Row():
                rename_button = gr.Button("Rename", size="sm", elem_id="rename-conversation")
                delete_button = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-conversation")
        with gr.Column(scale=3):
            # User text is shown as text: no Markdown rendering, and HTML is sanitized.
            chatbot = gr.Chatbot(
                label="Conversation",
                height=420,
                render_markdown=False,
                sanitize_html=True,
                elem_id="chatbot",
                feedback_options=None,
                buttons=["copy", "copy_all"],
            )
            message = gr.Textbox(
                label="Message",
                placeholder="Type in English or 中文, then press Enter",
                max_lines=4,
                max_length=settings.max_message_chars,
                elem_id="chat-input",
            )
            chat_notice = gr.HTML("", visible=False, elem_id="chat-notice")  # what went wrong, said here only
            with gr.Row():
                send_button = gr.Button("Send", variant="primary", elem_id="send")
                stop_button = gr.Button(
                    "Stop reply", variant="stop", elem_id="stop-reply", visible=False
                )  # pending
                retry_button = gr.Button(
                    "Retry failed reply", elem_id="retry", visible=False
                )  # shown on a failure
            with gr.Accordion("Decoding settings", open=False):
                start = handlers.decoding_panel_defaults()
                beam_size = gr.Slider(1, 16, value=start["beam_size"], step=1, label="Beam size")
                length_penalty = gr.Slider(
                    0.0, 3.0, value=start["length_penalty"], step=0.1, label="Length penalty (GNMT α)"
                )
                max_length = gr.Slider(1, 256, value=start["max_length"], step=1, label="Max length (tokens)")
                gr.Markdown(
                    "Settings you change are stored with each message and the worker decodes the reply "
                    "with them; untouched ones keep the model's own defaults."
                )
    decoding = [beam_size, length_penalty, max_length]
    buttons = [retry_button, stop_button]
    reply_outputs = [chatbot, conversation_id, message, conversations, *buttons, chat_notice]
    for trigger in (send_button.click, message.submit):
        trigger(
            events.send_message,
            [message, conversation_id, owner_key, *decoding],
            reply_outputs,
            api_visibility="private",
            concurrency_limit=None,
        )
    retry_button.click(
        events.retry_reply,
        [conversation_id, owner_key, *decoding],
        reply_outputs,
        api_visibility="private",
        concurrency_limit=None,
    )
    stop_button.click(
        events.stop_reply,
        [conversation_id, owner_key],
        [chatbot, *buttons, chat_notice],
        api_visibility="private",
        concurrency_limit=None,
    )
    conversations.input(
        events.open_conversation,
        [conversations, owner_key],
        [chatbot, conversation_id, *buttons, chat_notice],
        api_visibility="private",
    )
    # The Chatbot's own Clear icon (it cannot be hidden) does what New conversation does: an emptied chat
    # whose next message went on with the old conversation was a lie.
    for trigger in (new_button.click, chatbot.clear):
        trigger(
            events.new_conversation,
            None,
            [chatbot, conversation_id, conversations, title, *buttons, chat_notice],
            api_visibility="private",
        )
    rename_button.click(
        events.rename_conversation,
        [title, conversation_id, owner_key],
        [conversations, chat_notice],
        api_visibility="private",
    )
    delete_button.click(
        events.delete_conversation,
        [conversation_id, owner_key],
        [chatbot, conversation_id, conversations, *buttons, chat_notice],
        api_visibility="private",
    )
    session = [conversations, chatbot, conversation_id, *buttons, chat_notice]
    return session


def _reading_tab(owner_key: gr.BrowserState) -> None:
    settings = get_settings()
    with gr.Row():
        with gr.Column():
            passage = gr.Textbox(
                label="Passage", lines=8, max_length=settings.max_passage_chars, elem_id="passage"
            )
            question = gr.Textbox(
                label="Question", max_lines=2, max_length=settings.max_question_chars, elem_id="question"
            )
            rc_notice = gr.HTML("", visible=False, elem_id="rc-notice")  # what went wrong, said here only
            with gr.Row():
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                stop_button = gr.Button(
                    "Stop", variant="stop", elem_id="stop-question", visible=False
                )  # pending
            gr.Examples(RC_EXAMPLES, inputs=[passage, question], label="Examples (English and 中文)")
        with gr.Column():
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
            score = gr.Number(label="Score (length-penalised log-prob)", interactive=False)
            details = gr.Textbox(label="Details", interactive=False, max_lines=1)
            n_best = gr.Dataframe(headers=events.NBEST_HEADERS, label="n-best", interactive=False)
    highlighted = gr.HighlightedText(
        label="Passage: the answer and what it attended to",
        color_map=attention.COLOR_MAP,
        show_legend=True,
        combine_adjacent=True,
        elem_id="highlighted-passage",
    )
    # The attention view is HTML built from escaped text (ui/attention.py), so the browser's fonts draw CJK.
    attention_view = gr.HTML(
        attention.PLACEHOLDER,
        css_template=attention.CSS,
        js_on_load=None,
        elem_id="attention-view",
        padding=True,
    )
    question_id = gr.State("")  # the pending question, for Stop
    outputs = [
        answer,
        score,
        n_best,
        highlighted,
        attention_view,
        details,
        question_id,
        stop_button,
        rc_notice,
    ]
    for trigger in (ask_button.click, question.submit):
        trigger(
            events.ask_question,
            [passage, question, owner_key],
            outputs,
            api_visibility="private",
            concurrency_limit=None,
        )
    stop_button.click(
        events.stop_question,
        [question_id, owner_key],
        [stop_button, rc_notice],
        api_visibility="private",
        concurrency_limit=None,
    )


def _batch_tab(owner_key: gr.BrowserState) -> None:
    with gr.Row():
        with gr.Column():
            upload = gr.File(
                label="Upload JSONL, CSV or SQuAD JSON",
                file_types=[".jsonl", ".ndjson", ".csv", ".json"],
                type="filepath",
                elem_id="batch-file",
            )
            gr.Markdown(BATCH_HELP, elem_id="batch-help")
        with gr.Column():
            submit_button = gr.Button("Submit job", variant="primary", elem_id="batch-submit")
            submit_report = gr.Textbox(
                label="Submission", interactive=False, lines=2, max_lines=4, elem_id="batch-report"
            )  # two lines: the report wraps at 390 px
    jobs = gr.Dataframe(
        headers=events.JOB_HEADERS, label="Your jobs (refreshes every 2 s)", interactive=False, elem_id="jobs"
    )
    refresh_problem = gr.Textbox(
        label="Refresh problem", interactive=False, max_lines=1, visible=False, elem_id="refresh-problem"
    )  # shown only while refreshing fails
    with gr.Row():
        selected = gr.Dropdown(label="Job", choices=[], value=None, interactive=True, elem_id="job-select")
        cancel_button = gr.Button("Cancel job", variant="stop", elem_id="job-cancel")
        export_button = gr.Button("Export results", elem_id="job-export")
    action_report = gr.Textbox(
        label="Job action", interactive=False, max_lines=1, visible=False, elem_id="job-action"
    )  # shown once an action has something to say
    downloads = gr.File(
        label="Results: JSONL, CSV, SQuAD predictions",
        file_count="multiple",
        interactive=False,
        elem_id="job-downloads",
    )
    errors = gr.Dataframe(
        headers=events.ERROR_HEADERS,
        label="Errors (bad lines and failed items)",
        interactive=False,
        elem_id="job-errors",
    )
    submit_button.click(
        events.submit_batch,
        [upload, owner_key],
        [submit_report, errors, jobs, selected],
        api_visibility="private",
    )
    cancel_button.click(events.cancel_job, [selected, owner_key], action_report, api_visibility="private")
    export_button.click(
        events.export_job, [selected, owner_key], [downloads, action_report], api_visibility="private"
    )
    timer = gr.Timer(2.0)
    timer.tick(
        events.refresh_jobs,
        [selected, owner_key],
        [jobs, selected, errors, refresh_problem],
        api_visibility="private",
        show_progress="hidden",
    )


def _system_tab() -> tuple[gr.HTML, gr.Textbox]:
    summary = gr.Textbox(
        label="Service", interactive=False, lines=2, elem_id="system-summary"
    )  # wraps at 390 px
    gr.Markdown("**Workers online**")
    workers = gr.HTML(events.workers_table([]), elem_id="workers")  # long cells wrap: every column in view
    refresh = gr.Button("Refresh")
    refresh.click(events.system_status, None, [workers, summary], api_visibility="private")
    gr.Timer(5.0).tick(
        events.system_status, None, [workers, summary], api_visibility="private", show_progress="hidden"
    )
    return workers, summary


def build_app() -> gr.Blocks:
    settings = get_settings()
    with gr.Blocks(title="s2s-service") as demo:
        owner_key = gr.BrowserState("", storage_key=OWNER_STORAGE_KEY, secret=browser_secret(settings))
        gr.Markdown("## s2s-service: chat and reading comprehension")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                session = _chat_tab(owner_key)
            with gr.Tab("Reading comprehension", id="rc"):
                _reading_tab(owner_key)
            with gr.Tab("Batch jobs", id="batch"):
                _batch_tab(owner_key)
            with gr.Tab("System", id="system"):
                workers, summary = _system_tab()
        api.register()
        demo.load(events.start_session, owner_key, [owner_key, *session], api_visibility="private")
        demo.load(events.system_status, None, [workers, summary], api_visibility="private")
    # Gradio only waits here; the model is protected by the Celery queue, so many events may wait at once.
    demo.queue(
        default_concurrency_limit=settings.ui_concurrency,
        max_size=settings.ui_concurrency * QUEUE_SIZE_PER_SLOT,
    )
    return demo  # type: ignore[no-any-return]  # gradio's Blocks.__enter__ is untyped


def _configure_queue_client() -> None:
    """Build the Celery client configuration once, on the main thread.

    Left to the first event, two threads could configure it at once, and Celery's lazy configuration then
    recursed (RecursionError in workers.celery_app._configure). Without Redis the UI still starts; every
    event then explains that the queue is unreachable.
    """
    from workers.celery_app import app as celery_app

    try:
        celery_app.conf.broker_url  # noqa: B018  (reading it runs the on_configure hook)
    except Exception as error:
        logger.warning("the queue is not reachable yet: %s", error)


def main() -> None:
    from storage import migrate
    from ui import metrics

    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    settings = get_settings()
    migrate.ensure_schema(settings.resolved_database_url)
    _configure_queue_client()
    auth = (settings.ui_user, settings.ui_password) if settings.ui_user and settings.ui_password else None
    demo = build_app()
    demo.launch(
        server_name=settings.ui_host,
        server_port=settings.ui_port,
        auth=auth,
        footer_links=["api"],
        css=CSS,
        app_kwargs=metrics.app_kwargs(settings),
    )  # GET /metrics for Prometheus (S2S_UI_METRICS)


if __name__ == "__main__":
    main()
