"""Run plumbing every command shares: flags and the entry point (`cli`), errors, file writing (`fs`,
`outputs`), one run per output folder (`folder`), the start of a training run (`setup`), progress."""
