"""`python -m diffusion_controller.settings --markdown | --yaml`: see settings/docs.py."""

from diffusion_controller.settings.docs import main

raise SystemExit(main())
