"""The code behind the DR Tulu drop-in files: ``open_instruct/search_rewards/utils/*.py`` in a trainer checkout are
shims that import from here (``resilient-llm install`` puts them in place), so upgrading the package upgrades them."""
