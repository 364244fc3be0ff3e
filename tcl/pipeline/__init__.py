"""What ``make`` drives: its plan of the trainings (``plan``), the papermill runner of one
notebook (``run_notebook``), what the notebooks call (``chapters``), and the README's results
block with the comparison of a run against it (``reproduction``)."""
