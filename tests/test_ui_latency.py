"""The server process the app launches hands the GIL over quickly (streamed updates hop threads many times)."""

from __future__ import annotations

import sys
import urllib.request

import gradio as gr
from fixtures_app import free_port

from cbtcompare.ui import launch


def test_launching_the_app_shortens_the_gil_switch_interval():
    python_default = 0.005
    before = sys.getswitchinterval()
    sys.setswitchinterval(python_default)
    with gr.Blocks() as demo:
        gr.Markdown("hello")
    port = free_port()
    try:
        launch(demo, server_name="127.0.0.1", server_port=port, quiet=True, _frontend=False)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=60) as page:
            assert page.status == 200  # the server is up: this is the launched app's process setting
        assert sys.getswitchinterval() < python_default
    finally:
        demo.close()
        sys.setswitchinterval(before)
