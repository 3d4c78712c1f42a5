"""Style transfer speed and memory: `visionkit.style` against the PyTorch tutorial's implementation.

Reference: "Neural Transfer Using PyTorch" (pytorch.org tutorials) as written there — VGG19 `features` rebuilt
as an nn.Sequential with a Normalization module, out-of-place ReLUs and loss modules inserted after the
chosen layers, trimmed after the last loss, L-BFGS with the clamp inside the closure, fp32 — given the
classic layers ours uses (content relu4_2; style relu1_1..relu5_1) and the same VGG19 weights, so both
compute the same loss (checked on the first step). Each side runs in a fresh child process; seconds per
optimization step = wall time / loss evaluations after two warm-up steps; peak memory = the child's peak RSS.
Also: the fast stylizer's images/s at the same size. Weights are random (no download here): speed and
memory do not depend on their values. On CUDA, peak memory is the child's peak allocated GPU memory and the
"bf16" row is our `auto` precision there (bf16 on compute capability 8.0+).

    python bench/bench_style.py              # 512 px, 10 timed steps, CPU
    python bench/bench_style.py --size 256 --steps 5
    python bench/bench_style.py --device cuda --size 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import run_child

WARMUP = 2
STYLE_WEIGHT = 1e6  # ours: mean over 5 style layers; the tutorial sums them, so it gets 1e6 / 5


def _images(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : size * 3 // 4, 0:size].astype(np.float32)
    content = np.stack([xx / size * 255, yy / size * 255, 128 + 100 * np.sin(xx / 17)], -1)
    style = rng.uniform(0, 255, (size * 3 // 4, size, 3))  # the tutorial needs style and content of one size
    return content.clip(0, 255).astype(np.uint8), style.astype(np.uint8)


def _weights_file(workdir: Path) -> Path:
    from visionkit.style.vgg import build_vgg19

    path = workdir / "vgg19_random.pth"
    if not path.is_file():
        net = build_vgg19(("relu5_1",), "random")
        torch.save({f"features.{k}": v for k, v in net.body.state_dict().items()}, path)
    return path


def reference(size: int, steps: int, weights: Path, device: str) -> dict:
    """The tutorial's code (names and structure kept), timed per loss evaluation."""
    import torch.nn.functional as F
    import torchvision
    from torch import nn, optim

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1).to(device)
            self.std = torch.tensor(std).view(-1, 1, 1).to(device)

        def forward(self, img):
            return (img - self.mean) / self.std

    cnn = torchvision.models.vgg19().features.eval()
    state = torch.load(weights, weights_only=True)
    cnn.load_state_dict({k[len("features.") :]: v for k, v in state.items()}, strict=False)
    cnn = cnn.to(device)
    content_np, style_np = _images(size)
    content_img = torch.from_numpy(content_np).permute(2, 0, 1)[None].float().contiguous().to(device) / 255
    style_img = torch.from_numpy(style_np).permute(2, 0, 1)[None].float().contiguous().to(device) / 255
    content_layers, style_layers = ["relu_10"], ["relu_1", "relu_3", "relu_5", "relu_9", "relu_13"]
    normalization = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        else:
            name = f"pool_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            content_loss = ContentLoss(model(content_img).detach())
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            style_loss = StyleLoss(model(style_img).detach())
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[: (i + 1)]
    input_img = content_img.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img])
    run, losses, started = [0], [], [0.0]

    def closure():
        with torch.no_grad():
            input_img.clamp_(0, 1)
        optimizer.zero_grad()
        model(input_img)
        style_score = sum(sl.loss for sl in style_losses) * (STYLE_WEIGHT / len(style_layers))
        content_score = sum(cl.loss for cl in content_losses)
        loss = style_score + content_score
        loss.backward()
        run[0] += 1
        losses.append(float(loss))
        if run[0] == WARMUP:
            started[0] = time.perf_counter()
        return loss

    while run[0] < steps + WARMUP:
        optimizer.step(closure)
    seconds = (time.perf_counter() - started[0]) / (run[0] - WARMUP)
    return {"s_per_step": seconds, "first_loss": losses[0], "steps": run[0]}


def ours(size: int, steps: int, weights: Path, precision: str, device: str) -> dict:
    from visionkit.style import StyleTransfer

    content, style = _images(size)
    runner = StyleTransfer(weights=str(weights), precision=precision, device=device)
    stamps: list[float] = []
    outcome = runner.run(
        content, style, size=size, steps=steps + WARMUP, style_weight=STYLE_WEIGHT, progress=False,
        callback=lambda scale, step, image, losses: stamps.append(time.perf_counter()),
    )  # fmt: skip
    seconds = (stamps[-1] - stamps[WARMUP - 1]) / steps
    return {"s_per_step": seconds, "first_loss": outcome.history[0]["loss"], "steps": len(outcome.history)}


def fast_stylizer(size: int, batch: int, precision: str, device: str) -> dict:
    from visionkit.models.transformer_net import TransformerNet

    net = TransformerNet().eval().to(device)
    images = torch.rand(batch, 3, size * 3 // 4, size, device=device)
    context = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else torch.no_grad()
    with torch.inference_mode(), context:
        net(images)
        _sync(device)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < 10 or count < 2:
            net(images)
            _sync(device)
            count += 1
    return {"images_per_s": batch * count / (time.perf_counter() - started)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _child(args: list[str]) -> dict:
    kind, size, steps, workdir, device = args[0], int(args[1]), int(args[2]), Path(args[3]), args[4]
    torch.manual_seed(0)
    if kind == "reference":
        result = reference(size, steps, _weights_file(workdir), device)
    elif kind.startswith("ours"):
        result = ours(size, steps, _weights_file(workdir), kind.split("_")[1], device)
    else:
        result = fast_stylizer(size, 4, kind.split("_")[1], device)
    if device == "cuda":
        result["peak_rss_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(_child(sys.argv[sys.argv.index("--child") + 1 :])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="long side in px")
    parser.add_argument("--steps", type=int, default=10, help="timed optimization steps")
    parser.add_argument("--workdir", default="/tmp/visionkit-bench-style")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {args.size} px, {args.steps} timed steps")
    ref = run_child(__file__, ["reference", str(args.size), str(args.steps), str(workdir), args.device])
    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"| run | s/step | ÷ reference | {memory} | first loss |\n|---|---|---|---|---|")
    ref_row = f"{ref['s_per_step']:.3f} | 1.00 | {ref['peak_rss_mb']:.0f} | {ref['first_loss']:.5g}"
    print(f"| tutorial reference (fp32) | {ref_row} |")
    for kind in ("ours_fp32", "ours_bf16"):  # auto picks bf16 on CPUs with AVX512-BF16/AMX
        res = run_child(__file__, [kind, str(args.size), str(args.steps), str(workdir), args.device])
        ratio = res["s_per_step"] / ref["s_per_step"]
        print(
            f"| visionkit {kind.split('_')[1]} | {res['s_per_step']:.3f} | {ratio:.2f} | {res['peak_rss_mb']:.0f} "
            f"| {res['first_loss']:.5g} |",
            flush=True,
        )
    for precision in ("fp32", "bf16"):
        res = run_child(__file__, [f"fast_{precision}", str(args.size), "0", str(workdir), args.device])
        print(
            f"fast stylizer {precision}, batch 4, {args.size}x{args.size * 3 // 4}: {res['images_per_s']:.2f} images/s"
        )


if __name__ == "__main__":
    main()
