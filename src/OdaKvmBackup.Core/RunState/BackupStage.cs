namespace OdaKvmBackup.Core.RunState;

/// <summary>
/// Where one disk of a run is: what the journal records (DiskRecord.State) and what the pipeline's objects show
/// (VmDiskBackup.Stage). A disk moves forward only: Planned, Snapshotted, Copied, Committed, Retained; RolledBack
/// when its run was given up and the disk put back on its own file.
/// </summary>
/// <remarks>The journal holds the names, so the order may change but a name may not: a journal written by an
/// earlier version is read by Repair-KvmBackup after an upgrade (that version wrote "OnOverlay" for Snapshotted; see
/// <see cref="DiskRecord.StageJsonConverter"/>). The numbers are those the pipeline's Stage had before Planned joined
/// (ConvertTo-Json writes an enum as its number): Planned comes first, so that a disk moving forward counts up, at -1.</remarks>
public enum BackupStage
{
    /// <summary>Checked and about to be snapshotted; a disk of a cold backup (its domain is shut off) stays here
    /// until it is copied, and is shown as Snapshotted.</summary>
    Planned = -1,
    /// <summary>The domain writes to the disk's overlay; the disk's own file is frozen.</summary>
    Snapshotted = 0,
    /// <summary>The frozen file was copied to the backup set.</summary>
    Copied = 1,
    /// <summary>The overlay was committed back: the domain writes to the disk's own file again.</summary>
    Committed = 2,
    /// <summary>The overlay was moved to the retention folder.</summary>
    Retained = 3,
    /// <summary>The run was given up and the disk put back on its own file.</summary>
    RolledBack = 4,
}
