"""``python -m stalwart_agent`` is the same as ``stalwart-agent``."""

from stalwart_agent.cli import main

main()
