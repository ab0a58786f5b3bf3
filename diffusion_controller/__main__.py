"""`python -m diffusion_controller` is the same CLI as `diffusion-controller`."""

from diffusion_controller.cli import main

raise SystemExit(main())
