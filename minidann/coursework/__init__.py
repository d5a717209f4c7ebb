"""An autograded assignment made from the reference ops: students write backward passes, a grader checks them.

``python -m minidann.coursework make-assignment DIR`` writes the student copy, ``python -m minidann.coursework
grade DIR`` prints the score table (see docs/assignment.md).
"""

from .assignment import make_assignment, solution_blocks, student_source
from .grading import Result, grade, load_ops, score_table, unload_ops
from .tasks import TASKS, Case, Task, run_task, task_by_name

__all__ = ["TASKS", "Case", "Result", "Task", "grade", "load_ops", "make_assignment", "run_task", "score_table",
           "solution_blocks", "student_source", "task_by_name", "unload_ops"]
