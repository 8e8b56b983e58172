"""The packaged experiment configs, loaded by name (``yolox-jax train -n yolox-s``,
``-f synthetic``, ``-f custom_coco``): each module defines ``get_config() -> Config``."""
