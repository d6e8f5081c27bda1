#!/usr/bin/env python3
"""Train the deblurd U-Net (thin wrapper of :mod:`deblurd.training.train`).

    pip install torch==2.13.0 -e '.[train]'
    tools/prepare_training_photos.sh /work/train-photos
    python tools/train.py --photos /work/train-photos --out runs/unet --minutes 40 \
        --onnx engines/unet.onnx
"""

from __future__ import annotations

import sys

from deblurd.training.train import main

if __name__ == "__main__":
    sys.exit(main())
