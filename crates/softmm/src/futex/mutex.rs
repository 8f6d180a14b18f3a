//! A mutex and a condition variable on softmm futexes (written next).
