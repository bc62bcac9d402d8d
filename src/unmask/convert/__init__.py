"""Importers for published checkpoints: local Hugging Face folders in the publisher's format.

A publisher folder holds ``config.json`` (with ``model_type``), the weights as
``model.safetensors`` or shards listed in ``model.safetensors.index.json``, and
``tokenizer.json``. Nothing here touches the network or unpickles anything.

Inside:

- ``Importer``: one family, declared as data: how to recognise its ``config.json``, which
  ``config.json`` keys become which ``ModelConfig`` fields (``facts``), which options it must
  have for unmask's one Transformer to reproduce it (``requires``), and a weight-name map
  (source-name pattern -> unmask parameter name, ``{i}`` = layer index). Litgpt-style.
- ``IMPORTERS`` (registry: ``llada``, ``dream``, ``mdlm``, ``sedd``, ``bd3lm``,
  ``llada-moe``, ``llada2``, ``transformers``) and ``UNSUPPORTED`` (families we recognise
  but cannot run, with the reason; empty today).
- ``is_publisher_folder``, ``detect``, ``import_folder`` (-> ``unmask.loaded.Loaded``),
  ``parse_dtype`` (``load``); ``convert`` (publisher folder -> native unmask checkpoint),
  ``export`` (native -> a family's layout), ``write_safetensors`` (``write``).

Modules: ``importer`` (``Importer`` and the registry), ``families`` (the declarations),
``load`` (reading), ``stream`` (the block-by-block fill of a meta-device model, shared with
native checkpoints), ``write`` (writing), ``hf_export`` (family ``transformers``: unmask's own
model as a ``transformers`` folder with its modeling code, from ``hf_template/``).

Weights are read block by block with ``safetensors.safe_open`` straight into a model built
on the meta device, each block materialised in the requested dtype as it is filled, so RAM
never holds a second full copy. ``convert`` and ``export`` build the model on the meta
device only (its shapes): each tensor is read as it is written (``stream.StreamedWeights``).
"""

from __future__ import annotations

from unmask.convert.families import IMPORTERS, UNSUPPORTED, Importer, register
from unmask.convert.hf_export import TRANSFORMERS
from unmask.convert.load import (
    detect,
    import_folder,
    is_publisher_folder,
    load_weights,
    model_config,
    parse_dtype,
    shard_files,
    weight_map,
)
from unmask.convert.write import convert, export, export_config
from unmask.files import write_safetensors

__all__ = [
    "IMPORTERS",
    "TRANSFORMERS",
    "UNSUPPORTED",
    "Importer",
    "convert",
    "detect",
    "export",
    "export_config",
    "import_folder",
    "is_publisher_folder",
    "load_weights",
    "model_config",
    "parse_dtype",
    "register",
    "shard_files",
    "weight_map",
    "write_safetensors",
]
