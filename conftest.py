pytest_plugins = ["course_lib.nbval_plugin"]
