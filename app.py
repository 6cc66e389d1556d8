"""Entry point (Hugging Face Space app_file): build the CBTCompare Blocks and launch it.

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (read by Gradio itself); data goes under /data when
that folder exists (Spaces persistent storage), else under ./data (see cbtcompare.paths).
"""

from __future__ import annotations

from cbtcompare.ui import CSS, build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch(css=CSS)
