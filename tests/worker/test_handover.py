"""The hand-over from an official image's entry to our bootstrap: what it passes on."""

from __future__ import annotations

import sys

import pytest

from flash_runtime.worker.handover import handover_env, serves_in_process, uvicorn_address


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["/usr/local/bin/uvicorn", "lb_handler:app", "--host", "0.0.0.0", "--port", "80",
          "--timeout-keep-alive", "600"], {}, ("0.0.0.0", 80)),
        (["uvicorn", "lb_handler:app", "--port=8080"], {}, ("127.0.0.1", 8080)),
        (["uvicorn", "lb_handler:app"], {"UVICORN_HOST": "::", "UVICORN_PORT": "81"}, ("::", 81)),
        (["/venv/lib/python3.12/site-packages/uvicorn/__main__.py", "lb_handler:app"], {},
         ("127.0.0.1", 8000)),
        (["handler.py"], {}, None),
    ],
)  # fmt: skip
def test_uvicorn_address(
    argv: list[str], env: dict[str, str], expected: tuple[str, int] | None
) -> None:
    assert uvicorn_address(argv, env) == expected


def test_lb_handover_listens_where_the_image_asked_and_keeps_the_platforms_env() -> None:
    env = {"PYTHONPATH": "/opt/x", "RUNPOD_ENDPOINT_ID": "ep", "PORT": "1"}
    argv = ["uvicorn", "lb_handler:app", "--host", "0.0.0.0", "--port", "80"]
    out = handover_env("api", "lb", "/app", "/app/.flash-worker", env=env, argv=argv)
    assert out["PYTHONPATH"] == "/app/.flash-worker:/app/.flash-worker/core.zip:/opt/x"
    assert (out["FLASH_HOST"], out["PORT"]) == ("0.0.0.0", "80")
    assert out["FLASH_DISABLE_UNPACK"] == "1" and out["FLASH_APP_DIR"] == "/app"
    assert (out["FLASH_RESOURCE_NAME"], out["FLASH_ENDPOINT_TYPE"]) == ("api", "lb")
    assert out["RUNPOD_ENDPOINT_ID"] == "ep"


def test_queue_handover_leaves_ports_alone() -> None:
    out = handover_env("job", "qb", "/app", "/app/.flash-worker", env={}, argv=["handler.py"])
    assert "PORT" not in out and "FLASH_HOST" not in out
    assert out["PYTHONPATH"] == "/app/.flash-worker:/app/.flash-worker/core.zip"


def test_lb_is_served_in_the_images_process_unless_a_separate_health_port_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    monkeypatch.setitem(sys.modules, "uvicorn", types.ModuleType("uvicorn"))
    argv = ["uvicorn", "lb_handler:app", "--port", "80"]
    env = handover_env("api", "lb", "/app", "/app/.flash-worker", env={}, argv=argv)
    assert serves_in_process(env, argv)
    assert serves_in_process({**env, "PORT_HEALTH": "80"}, argv)  # the same port
    assert not serves_in_process({**env, "PORT_HEALTH": "81"}, argv)
    assert not serves_in_process(env, ["python", "handler.py"])  # not the image's uvicorn
    monkeypatch.delitem(sys.modules, "uvicorn")
    assert not serves_in_process(env, argv)
