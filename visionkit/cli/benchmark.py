"""`visionkit-benchmark ckpt_path=... formats=[pytorch,onnx,torchscript,openvino]`: size, metric and speed of
each format (see conf/benchmark.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-benchmark", "benchmark", "benchmark")


if __name__ == "__main__":
    main()
