"""The lessons: each chapter's own experiments and the logic of its widgets, named by chapter.

What is here serves one chapter's story (or two, said in the module's docstring); what a
learner reuses in their own projects lives in the toolkit one level up (``course_lib.optim``,
``data``, ``models``, ``augment``, ``train``, ``transfer``, ``hardening``...).

    ch00_first_steps        the first widget: gradient descent on a parabola
    ch01_descent_widgets    chapters 1-2: descent on 2-D surfaces, optimizer paths, CG
    ch02_optimizer_study    chapters 1-2: optimizers trained on the digits, compared
    ch03_training_workflow  chapter 3: the plain loop, loss gradients, activation and shape studies
    ch04_generalization     chapter 4: regularisation studies over seeds
    ch05_transfer_study     chapter 5: transfer strategies compared, the explorer widget
    ch06_hardening          chapter 6: the heads it hardens, calibration over seeds

Widget logic is pure functions that return figures or text, tested headless; the notebook
only wires sliders to them.
"""
