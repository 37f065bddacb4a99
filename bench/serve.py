"""Images per minute from `janus serve` with several clients at once, against the same requests one at a time.

    python bench/serve.py                        # 1B dims, bf16, CPU, 4 clients, one whole image each
    python bench/serve.py --clients 8 --device cuda
    python bench/serve.py --model-size tiny      # a quick check of the harness (seconds)

The server runs in this process (uvicorn on 127.0.0.1) with the backends `auto` picks, serving the bench's
seeded random model (models.py); clients are the real `openai` client on threads. One warm-up request, then
the same `--clients` requests (one image each, seeds 0, 1, ...) twice: one after another (serial), and all
at once (concurrent: the server batches them, `image_batch` = --clients). Printed side by side with their
ratio, and whether each concurrent image equals its serial one (it should: every image has its own seed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import torch

from janus_adapters.server import ServerSettings, create_app, serve_in_thread
from janus_sdk.devices import resolve_dtype
from models import MODEL_SIZES, load_ours

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="1b")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--linear", default=None, help="our linear backend (default: the config's 'auto')")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    return args


def timed(run: Callable[[], list[str]]) -> tuple[float, list[str]]:
    """Seconds `run` took, and the images' digests it returned."""
    start = time.perf_counter()
    digests = run()
    return time.perf_counter() - start, digests


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), resolve_dtype(args.dtype, torch.device(args.device))
    pipe = load_ours(args.model_size, dtype=dtype, device=device, seed=0, attention=None, linear=args.linear)
    settings = ServerSettings(image_batch=args.clients, max_n=1, max_queue=max(16, args.clients))
    with serve_in_thread(create_app(pipe, settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=3600)

        def image(seed: int) -> str:
            answer = client.images.generate(prompt=PROMPT, n=1, extra_body={"seed": seed})
            data = (answer.data or [])[0].b64_json or ""
            return hashlib.sha256(base64.b64decode(data)).hexdigest()

        def serial() -> list[str]:
            return [image(seed) for seed in range(args.clients)]

        def concurrent() -> list[str]:
            with ThreadPoolExecutor(args.clients) as pool:
                return list(pool.map(image, range(args.clients)))

        image(args.clients)  # warm-up: the measured choices of `auto`, first-call costs
        serial_s, serial_images = timed(serial)
        concurrent_s, concurrent_images = timed(concurrent)
    per_minute = {
        "serial": 60 * args.clients / serial_s,
        "concurrent": 60 * args.clients / concurrent_s,
    }
    results = {
        "machine": platform.processor() or platform.machine(),
        "device": str(device),
        "dtype": args.dtype,
        "model_size": args.model_size,
        "clients": args.clients,
        "linear": pipe.linear.name if pipe.linear is not None else "torch",
        "serial_s": serial_s,
        "concurrent_s": concurrent_s,
        "images_per_minute": per_minute,
        "ratio": per_minute["concurrent"] / per_minute["serial"],
        "same_images": sum(a == b for a, b in zip(serial_images, concurrent_images, strict=True)),
    }
    print(
        f"{args.model_size} {args.dtype} on {device}, {args.clients} clients, linear {results['linear']}\n"
        f"  serial:     {serial_s:7.1f} s  {per_minute['serial']:6.2f} images/min\n"
        f"  concurrent: {concurrent_s:7.1f} s  {per_minute['concurrent']:6.2f} images/min\n"
        f"  ratio {results['ratio']:.2f}x; concurrent images equal to serial ones: "
        f"{results['same_images']}/{args.clients}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
