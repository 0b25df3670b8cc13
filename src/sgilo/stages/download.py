"""download stage: the demo's synthetic faces, or FFHQ from its official metadata (or a mirror)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sgilo.ffhq import download_ffhq
from sgilo.stages._common import log, set_threads, stage_parser, start
from sgilo.synthfaces import write_synthfaces


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="the dataset folder to write (index.csv, written last, marks it complete)",
    )
    args, params = start(parser, argv)
    set_threads(args.threads or 1)  # small tensors: a second thread costs more than it gives
    config = params.download
    if config.dataset == "synthfaces":
        s = config.synthfaces
        index = write_synthfaces(args.out, params.seed, s.n_train, s.n_test, config.resolution)
    else:
        f = config.ffhq
        index = download_ffhq(
            args.out,
            metadata_url=f.metadata_url,
            metadata_md5=f.metadata_md5,
            metadata_size=f.metadata_size,
            kind=f.kind,
            index_start=f.index_start,
            index_stop=f.index_stop,
            mirror_url=f.mirror_url,
            workers=f.workers,
            retries=f.retries,
            timeout=f.timeout_s,
        )
    counts = index["split"].value_counts().to_dict()
    log.info("%s ready in %s: %s", config.dataset, args.out, counts)


if __name__ == "__main__":
    main()
