import sys

from yolox_jax.cli import main

sys.exit(main())
