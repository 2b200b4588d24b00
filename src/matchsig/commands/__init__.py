"""The commands of ``matchsig`` that are not experiments: ``baseline``, ``evaluate``, ``rerank``,
``view``, ``train`` and ``parts``.

Each is a plain function with Typer options; :mod:`matchsig.cli` registers them on its app (in the
order ``matchsig --help`` lists them), so this package never imports the CLI.
"""
