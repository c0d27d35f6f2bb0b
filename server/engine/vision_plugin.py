"""vLLM general plugin (entry point ``vllm.general_plugins``): Pixtral without torchvision.

vLLM's Pixtral model imports transformers' Pixtral image processor module, which imports
torchvision; the CPU build of this server removes torchvision (its wheels break ``import vllm``
on CPU torch). transformers ships a PIL-only twin of that module with the same helpers, so where
torchvision is missing the twin stands in under the original module name.

vLLM loads general plugins in every process it starts (API process, engine core, workers,
the model-inspection subprocess), which is why this is a plugin and not an import-time patch in
our own code. It imports nothing from vLLM and is a no-op where torchvision is installed (GPU).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PIXTRAL_PROCESSOR = "transformers.models.pixtral.image_processing_pixtral"
PIL_TWIN = "transformers.models.pixtral.image_processing_pil_pixtral"


def register() -> None:
    if PIXTRAL_PROCESSOR in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    try:
        twin = importlib.import_module(PIL_TWIN)
    except ImportError:  # an older transformers without the twin: nothing to stand in with
        return
    if not hasattr(twin, "PixtralImageProcessor") and hasattr(twin, "PixtralImageProcessorPil"):
        twin.PixtralImageProcessor = twin.PixtralImageProcessorPil
    sys.modules[PIXTRAL_PROCESSOR] = twin
