"""`visionkit-pack`: every split of a data source written as LitData shards (in a folder or object storage) that
`data=stream` trains from; the job beside the training it feeds (the shard writing is `visionkit.data.pack`)."""

from __future__ import annotations

from omegaconf import DictConfig

from visionkit.config.checks import check_config
from visionkit.config.composed import plain
from visionkit.data.augment import size_hw
from visionkit.data.pack import pack_splits
from visionkit.data.shards import Location
from visionkit.errors import VisionkitError
from visionkit.training.fit import build_datamodule


def pack(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-pack data=<source> out=<folder | s3://bucket/prefix>`: every split of the source as LitData
    shards that `data=stream data.url=<out>` trains from (visionkit.data.pack)."""
    check_config(cfg)
    if not cfg.get("out"):
        raise VisionkitError("out is not set: pass out=<folder> or out=s3://bucket/prefix")
    if cfg.data.source.get("_target_", "").endswith("StreamSource"):
        raise VisionkitError("data=stream is packed already; pack the source it came from")
    datamodule = build_datamodule(cfg.data, None, mean=cfg.model.mean, std=cfg.model.std)
    splits = datamodule._load_splits()
    source = datamodule.source
    options = plain(cfg.pack.storage_options) or {}
    task = getattr(source, "task", "classification")
    metrics = pack_splits(
        splits,
        Location(str(cfg.out), options),
        task=task,
        task_name=str(cfg.task_name),
        class_names=datamodule.class_names,
        description=source.description,
        image_size=size_hw(datamodule.image_size),
        resize=datamodule.resize,
        fmt=datamodule.pixel_format,
        mask_reader=getattr(source, "mask_reader", None) if task == "segmentation" else None,
        ignore_index=getattr(source, "ignore_index", None),
        encoding=str(cfg.pack.encoding),
        quality=int(cfg.pack.quality),
        chunk_mb=float(cfg.pack.chunk_mb),
        workers=cfg.pack.workers,
        seed=int(cfg.data.split_seed),
    )
    rate, size, before = metrics["images_per_s"], metrics["packed_mb"], metrics["source_mb"]
    kept = f" ({int(metrics['kept'])} more kept from the run cut off)" if metrics["kept"] else ""
    print(
        f"packed {int(metrics['images'])} images{kept} into {cfg.out} in {metrics['seconds']:.1f} s "
        f"({rate:.0f} images/s): {size:.1f} MB (source {before:.1f} MB)"
    )
    return metrics
