"""Models from the command line: `specs` (what a --model argument names), `describe` (`sare model describe`), `cli`."""
