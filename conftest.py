pytest_plugins = ["course_lib.tools.nbval_plugin"]
