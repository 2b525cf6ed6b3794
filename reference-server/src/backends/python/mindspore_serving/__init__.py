"""MindSpore Serving's `mindspore_serving` package, as the reference server
provides it to `servable_config.py` files: `mindspore_serving.server.register`
declares the models and methods, which the server then runs itself. Nothing
else of MindSpore is needed (or used, where it is installed)."""
