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

from cbtcompare.ui import build_app, launch  # noqa: E402  (after the redaction hooks)

demo = build_app(warm_up=__name__ != "__main__")

if __name__ == "__main__":
    if reason := access.disabled_reason():
        logging.getLogger("cbtcompare").warning("%s", reason)
    launch(demo)
    demo.block_thread()
