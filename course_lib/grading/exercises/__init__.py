"""Exercise content, one module per chapter: public cases, known mistakes and their hints.

Each ``chNN.EXERCISES`` lists that chapter's ``Exercise`` specs (``course_lib.grading.spec``),
in notebook order; ``course_lib.grading.exercise_index`` maps notebooks to them. Hidden cases
live in ``course_lib/grading/data/hidden_cases.json``, never in a notebook. A new exercise
goes into its chapter's module here; the engine one level up needs no change.
"""
