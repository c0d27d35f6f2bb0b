"""Build a tiny random-weight Mistral checkpoint next to a real Mistral tokenizer file.

    .venv/bin/python scripts/make_tiny_model.py --kind v13-tekken --out /tmp/tiny-v13
    .venv/bin/python -m server --model /tmp/tiny-v13 --served-model-name tiny-v13

Its text is random; the serving path (rendering, engine, parsing) is the real one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.tinymodel import TOKENIZERS, build_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kind", choices=sorted(TOKENIZERS), default="v3-spm")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = build_tiny_model(args.out, args.kind, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
