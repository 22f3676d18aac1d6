namespace OdaKvmBackup.Core.RunState;

/// <summary>How putting a domain back went.</summary>
internal sealed record RollbackOutcome(string DomainName, bool BackOnOwnDisks, bool Clean, string Message)
{
    /// <summary>The error a rollback that left something to do is reported as (its message says what became of the
    /// VM and the way out); null when the VM is back and clean, and the message is a warning.</summary>
    public BackupException? AsError() =>
        !BackOnOwnDisks
            ? new BackupException(ErrorIds.StillOnOverlays, BackupErrorCategory.InvalidResult, Message, null, DomainName)
            : !Clean
                ? new BackupException(ErrorIds.RepairNeeded, BackupErrorCategory.InvalidResult, Message, null, DomainName)
                : null;
}
