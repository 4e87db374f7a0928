"""The course's machinery: what runs, checks and grades the course, not what a learner studies.

    cli               the ``course`` command (doctor, notebooks refresh, assign, grade, bench, pretrain)
    doctor            is this environment ready for the course? (``course doctor``, ``make doctor``)
    chapters          the chapter map: notebooks, titles, time estimates
    notebooks         ``course notebooks refresh``: execute notebooks and store their outputs
    provenance        what stored outputs were computed from, and on which kind of machine
    output_comparison comparing outputs with tolerance on a machine whose floats differ
    nbval_plugin      how strict nbval compares each notebook (exactly, or with tolerance)
    assign            ``course assign``: exercises/ generated from solutions/
    parity            the harness that checks the scratch optimizers against torch.optim
    bench             ``course bench``: timings as ratios against a reference in the same run
    pretrain          ``course pretrain``: how chapter 5's bundled backbone is made

Learners never import these in a notebook, except ``check_environment`` and ``chapter_map``
in chapter 0 (through ``course_lib``).
"""
