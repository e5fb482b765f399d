"""The ComfyUI boundary: the only package of the pack that imports ComfyUI.

Every import of ``comfy.*``, ``comfy_api``, ``folder_paths`` and ``server`` lives here; a test
(tests/adapter/test_layers.py) enforces it. What it holds:

- ``api``: the node API (``io``, ``ui``, ``ComfyExtension``), pinned in one line;
- ``sampling``: the one sampler function that EPD Sampler, the KSampler entry and RL rollouts
  use, model_sampling reading and sigma grids;
- ``training``: the training context (inference mode off, ``in_training``, the guider loop,
  autograd-safe weights, interruption, progress, live events, the autosaved best table);
- ``rollout``: RL rollouts through a guider and the VAE;
- ``folders``, ``reward_files``, ``reward_models``: model folders and reward model loading.
"""
