"""What dropout costs a training step on the CPU: torch's against tvae's (tvae/model/dropout.py).

    python -m bench.bench_dropout [--threads 2] [--repeats 40]

Times forward and backward, at the bundled model's training size (64 windows of 33 bars, width
256, 4 heads), of: a dropout layer on the bars' vectors (`nn.Dropout` and tvae's `Dropout`,
which draws four elements per 64-bit random number), and attention with dropout on its weights
(torch's scaled_dot_product_attention and tvae's `attend_with_dropout`, which training on the
CPU uses), each beside the same work without dropout. Milliseconds, the median of `--repeats`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.machine import describe_machine
from tvae.model.dropout import Dropout
from tvae.model.modules import attend_with_dropout

B, N, D, H, P = 64, 33, 256, 4, 0.1


def median_ms(work: Callable[[], torch.Tensor], repeats: int) -> float:
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        work().sum().backward()
        if i >= 5:  # warm-up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {describe_machine()}")
    x = torch.randn(B, N, D, requires_grad=True)
    for name, layer in (("nn.Dropout", nn.Dropout(P)), ("tvae Dropout", Dropout(P)),
                        ("no dropout", nn.Identity())):
        layer.train()
        print(f"dropout layer on ({B}, {N}, {D}), {name}: "
              f"{median_ms(lambda layer=layer: layer(x), args.repeats):.2f} ms")
    q, k, v = (torch.randn(B, H, N, D // H, requires_grad=True) for _ in range(3))
    mask = torch.ones(N, N, dtype=torch.bool).tril()[None, None].expand(B, 1, N, N)
    runs = {
        "torch SDPA, dropout": lambda: F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=P),
        "tvae attend_with_dropout": lambda: attend_with_dropout(q, k, v, mask, False, P),
        "torch SDPA, no dropout": lambda: F.scaled_dot_product_attention(q, k, v,
                                                                         attn_mask=mask),
    }
    for name, work in runs.items():
        print(f"attention over ({B}, {H}, {N}, {D // H}), {name}: "
              f"{median_ms(work, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
