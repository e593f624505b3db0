"""The lab's studies: clients of the engine (problems, runner, bench) that answer one question each."""
