namespace OdaKvmBackup.Core.WayBack;

/// <summary>
/// A backup set's status: what backup.json says (by name: see <see cref="BackupManifest.StatusName"/>), what
/// Get-KvmBackup shows and what the pipeline's objects show as SetStatus. PowerShell compares it with a string
/// (<c>$set.Status -eq 'Complete'</c>).
/// </summary>
public enum BackupSetStatus
{
    /// <summary>Being written, or its run was killed before it could say otherwise (Repair-KvmBackup then marks it Incomplete).</summary>
    InProgress,
    /// <summary>Every disk the run backs up was copied and verified. Disks left out are listed in ExcludedDisks.</summary>
    Complete,
    /// <summary>The run failed or was stopped: never restore from it.</summary>
    Incomplete,
}
