namespace OdaKvmBackup.Core.RunState;

/// <summary>A step failed and the run was given up: the step's error, then what became of the VM.</summary>
internal sealed record StepFailure(BackupException Error, RollbackOutcome Rollback);
