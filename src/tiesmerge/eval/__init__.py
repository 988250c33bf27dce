"""Multiple-choice evaluation: question sets (files and built-in verified generators), scoring, reports."""
