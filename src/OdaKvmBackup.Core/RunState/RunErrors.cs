namespace OdaKvmBackup.Core.RunState;

/// <summary>The errors of a run's state: each says what happened to the disk or run, and what to do.</summary>
internal static class RunErrors
{
    public static BackupException BackupInProgress(string domain)
    {
        RunRecord? journal = null;
        try
        {
            journal = RunJournal.TryLoad(domain);
        }
        catch (BackupException)
        {
        }
        var who = journal is null ? "" : $" (run {journal.RunId}, process {journal.ProcessId}, started {journal.StartedUtc:u})";
        return new(ErrorIds.BackupInProgress, BackupErrorCategory.ResourceBusy,
            $"A backup of '{domain}' is already running{who}; only one backup per VM runs at a time.",
            "Wait for it to finish; other VMs can be backed up meanwhile.", domain);
    }

    /// <summary>The state folder cannot be written (full, read-only, wrong owner, or a file where a folder should
    /// be): <paramref name="what"/> says which file or folder could not be written, made or removed.</summary>
    public static BackupException JournalWriteFailed(string domain, string what, Exception ex) =>
        new(ErrorIds.JournalWriteFailed, BackupErrorCategory.WriteError,
            $"{what}: {ex.Message}",
            $"Free space in the state folder '{StateDirectory.Root}', or fix it (a folder owned by root, mode 0700), or point $env:{StateDirectory.EnvironmentVariable} at a folder that can be written; then, if a backup of '{domain}' was running, run Repair-KvmBackup -DomainName {domain}.",
            domain, ex);

    public static BackupException BackupSetExists(string domain, string set) =>
        new(ErrorIds.BackupSetExists, BackupErrorCategory.ResourceExists, $"The backup set '{set}' already exists.",
            "Choose another -Destination, or use Copy-VmDisk -Force to write a new set there (the existing one is kept aside, renamed <set>.replaced-<time>).", domain);

    public static BackupException RunAbandoned(RunRecord run, string why) =>
        new(ErrorIds.RunAbandoned, BackupErrorCategory.InvalidOperation,
            $"Run {run.RunId} of '{run.DomainName}' was given up ({why}); nothing more is done with it.",
            $"Back '{run.DomainName}' up again: Get-VmDisk {run.DomainName} | New-KvmDiskSnapshot | ...", run.DomainName);

    public static BackupException RunHasAnotherDestination(RunRecord run, string first, string second) =>
        new(ErrorIds.RunHasAnotherDestination, BackupErrorCategory.InvalidOperation,
            $"Run {run.RunId} of '{run.DomainName}' already writes its backup set to '{first}'; one run has one set, so it is not copied to '{second}' as well.",
            $"Copy the finished set with your own tools, or take another backup to '{second}'.", run.DomainName);

    /// <summary>Not a failure: the disk was copied earlier in this run (Copy-VmDisk passes it on unchanged).</summary>
    public static BackupException AlreadyCopied(RunRecord run, DiskRecord disk) =>
        new(ErrorIds.AlreadyCopied, BackupErrorCategory.ResourceExists,
            $"Disk {disk.Target} of '{run.DomainName}' is already copied (or being copied) in run {run.RunId}.", null, run.DomainName);

    public static BackupException DiskNoLongerFrozen(RunRecord run, DiskRecord disk) =>
        new(ErrorIds.DiskNoLongerFrozen, BackupErrorCategory.InvalidOperation,
            $"Disk {disk.Target} of '{run.DomainName}' is {Describe(disk.State)}: '{disk.Source}' is no longer the frozen file of snapshot {run.RunId}, so a copy of it now would not be a consistent backup. Nothing was copied.",
            $"Copy the disks before committing them: Get-VmDisk {run.DomainName} | New-KvmDiskSnapshot | Copy-VmDisk -Destination <folder> | Invoke-BlockCommit | ...", run.DomainName);

    public static BackupException DiskBeingCopied(RunRecord run, DiskRecord disk) =>
        new(ErrorIds.DiskBeingCopied, BackupErrorCategory.ResourceBusy,
            $"Disk {disk.Target} of '{run.DomainName}' is being copied; it is not committed while its copy runs.",
            "Let Copy-VmDisk finish, then commit.", run.DomainName);

    public static BackupException RunClosed(RunRecord run) =>
        new(ErrorIds.RunClosed, BackupErrorCategory.InvalidOperation,
            $"Run {run.RunId} of '{run.DomainName}' is over (finished, or closed by Repair-KvmBackup): these objects no longer stand for a snapshot.",
            $"Back '{run.DomainName}' up again if you need a new backup.", run.DomainName);

    private static string Describe(BackupStage state) => state switch
    {
        BackupStage.Committed => "already committed back to its own file",
        BackupStage.Retained => "already committed back and its overlay retained",
        BackupStage.RolledBack => "back on its own file after its run was given up",
        _ => state.ToString(),
    };
}
