"""Which exercises exist, and which notebook holds which (one spec module per chapter)."""

from __future__ import annotations

from course_lib.grading.exercises import ch01, ch02, ch03, ch04, ch05, ch06, ch07
from course_lib.grading.spec import Exercise

# notebook (file stem in solutions/ and exercises/) -> its exercises, in notebook order
NOTEBOOK_EXERCISES: dict[str, list[Exercise]] = {
    "01_gradient_descent": ch01.EXERCISES,
    "02_optimizers": ch02.EXERCISES,
    "03_training_a_network": ch03.EXERCISES,
    "04_generalization": ch04.EXERCISES,
    "05_transfer_learning": ch05.EXERCISES,
    "06_deployment_hardening": ch06.EXERCISES,
    "07_scaling_out": ch07.EXERCISES,
}
EXERCISES: dict[str, Exercise] = {
    exercise.id: exercise for exercises in NOTEBOOK_EXERCISES.values() for exercise in exercises
}


def find_exercise(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]
