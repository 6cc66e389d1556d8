"""Entry point (Hugging Face Space app_file): build the CBTCompare Blocks and launch it.

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (read by Gradio itself); data goes under /data when
that folder exists (Spaces persistent storage), else under ./data (see cbtcompare.paths). Before anything
is built, every log record and every line on stdout/stderr goes through cbtcompare.redact, so no secret
reaches the server's logs; uploads are capped by Gradio's own upload route (upload_limit_bytes).
"""

from __future__ import annotations

import logging

from cbtcompare import access
from cbtcompare.redact import install_log_redaction, install_stream_redaction

install_log_redaction()
install_stream_redaction()

from cbtcompare.ui import (  # noqa: E402  (after the redaction hooks)
    CSS,
    build_app,
    upload_limit_bytes,
    warm_up_crisis_screening,
)

demo = build_app(warm_up=__name__ != "__main__")

if __name__ == "__main__":
    if reason := access.disabled_reason():
        logging.getLogger("cbtcompare").warning("%s", reason)
    # Gradio checks that its first page answers within 3 s; the classifier's heavy imports wait until after.
    demo.launch(css=CSS, max_file_size=upload_limit_bytes(), prevent_thread_lock=True)
    warm_up_crisis_screening()
    demo.block_thread()
