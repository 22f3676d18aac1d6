namespace OdaKvmBackup.Core.Steps;

/// <summary>
/// One disk's backup as the pipeline carries it from New-KvmDiskSnapshot to Move-OverlayToRetention. It is a view
/// of its run's journal (<see cref="BackupRun"/>): every property reads the run's current state, and only the run
/// changes it.
/// </summary>
public sealed class VmDiskBackup
{
    internal VmDiskBackup(BackupRun run, string target)
    {
        Run = run;
        Target = target;
    }

    /// <summary>The run that owns this disk's backup (not shown: it holds the whole journal).</summary>
    internal BackupRun Run { get; }
    private DiskRecord Disk => Run.Record.Disk(Target);

    public string DomainName => Run.DomainName;
    /// <summary>The guest device name, e.g. vda.</summary>
    public string Target { get; }
    /// <summary>The disk's own file: frozen while the VM writes to <see cref="Overlay"/>.</summary>
    public string Source => Disk.Source;
    public string Format => Disk.Format;
    /// <summary>The overlay the VM writes to during the backup (null for a cold backup).</summary>
    public string? Overlay => Disk.Overlay;
    public string SnapshotName => Run.Record.SnapshotName;
    public BackupConsistency Consistency => Run.Consistency;
    /// <summary>Names the run: yyyyMMdd-HHmmss of the snapshot (UTC), also the backup set's folder name.</summary>
    public string RunId => Run.RunId;

    /// <summary>The journal's stage of the disk. A disk of a cold backup is never on an overlay: it stays Planned in
    /// the journal until it is copied (frozen by its domain being shut off) and is shown as Snapshotted.</summary>
    public BackupStage Stage => Disk.State == BackupStage.Planned ? BackupStage.Snapshotted : Disk.State;

    /// <summary>The backup set folder ("/backup/vm/20261128-101500", or "root@srv:/backup/vm/...").</summary>
    public string? BackupSet => Run.Record.SetFolder is { } set && Run.Store is { } store ? store.Describe(set) : null;
    /// <summary>The copy of this disk, once it is copied.</summary>
    public string? BackupFile => (Disk.Digests ?? Disk.ContentDigest) is not null && Run.Record.SetFolder is { } set && Run.Store is { } store
        ? store.Describe(BackupNames.FileInSet(set, Disk.SetFile)) : null;
    /// <summary>
    /// The module's content digest of the disk, not the <c>sha256sum</c> of its file: SHA-256 over, for every 4 KiB
    /// block (in file order) that holds a non-zero byte, the block's offset (64-bit little-endian) followed by the
    /// block, and then the file size (64-bit little-endian); lower-case hex. All-zero blocks and holes leave no
    /// trace, so a file and its sparse copy have the same digest whatever is allocated: Copy-VmDisk computes it while
    /// reading the source and again re-reading the copy from storage, and only keeps a copy whose digests match.
    /// It is also in backup.json. For an independent check compare the copy with its source:
    /// <c>qemu-img compare -f raw -F raw &lt;copy&gt; &lt;source&gt;</c> (with the source's format).
    /// </summary>
    public string? ContentDigest => Disk.ContentDigest;
    /// <summary>Bytes of data in the copy (all-zero blocks are not counted).</summary>
    public long? CopiedBytes => Disk.DataBytes;
    /// <summary>The SHA-256 of the copy's block digest list (the file &lt;copy&gt;.digests beside it in the set).</summary>
    public string? Digests => Disk.Digests;
    /// <summary>The RunId of the set the copy was built from (only the blocks that differ were sent); null for a full copy.</summary>
    public string? BasedOn => Disk.BasedOn;
    /// <summary>Why the copy is full (no earlier Complete set, -Full, another size or format...).</summary>
    public string? FullBecause => Disk.FullBecause;
    /// <summary>How the copy is stored: <c>full</c>, <c>reflink</c> (a clone of the base's copy sharing its blocks)
    /// or <c>local copy</c> (the base's copy copied at the destination).</summary>
    public string? StoredAs => Disk.StoredAs;
    /// <summary>Bytes read from the frozen disk file.</summary>
    public long? BytesRead => Disk.BytesRead;
    /// <summary>Bytes written into the copy (sent over the network for an SSH destination).</summary>
    public long? BytesSent => Disk.BytesSent;
    /// <summary>Bytes of the base's data the copy took from it where it lies.</summary>
    public long? BytesCloned => Disk.BytesCloned;
    /// <summary>Bytes sent again only because the base's copy of them had rotted.</summary>
    public long? BytesResent => Disk.BytesResent;
    public long? SizeBytes => Disk.SizeBytes;
    /// <summary>The copy was read back from the destination's storage and matched the source.</summary>
    public bool Verified => Disk.Verified;
    /// <summary>The status of the whole set this disk belongs to: Complete only once every disk of the snapshot is
    /// copied and verified; Incomplete when the run failed, even for a disk that had been copied.</summary>
    /// <remarks>The name of the run's <see cref="BackupSetStatus"/>, a string so that ConvertTo-Json writes the word.</remarks>
    public string SetStatus => Run.SetStatus.ToString();
    public string? RetainedOverlay => Disk.RetainedOverlay;
    /// <summary>How long the disk wrote to its overlay: from the snapshot until it was committed back.</summary>
    public TimeSpan? TimeOnOverlay => Run.Record.SnapshotUtc is { } from && Disk.CommittedUtc is { } to ? to - from : null;
    /// <summary>How long this disk's copy took (its read-back check, which runs later, not counted).</summary>
    public TimeSpan? CopyTime => Disk.CopyStartedUtc is { } from && Disk.CopiedUtc is { } to ? to - from : null;
    /// <summary>How long this disk's block commit took, from its start until the disk wrote to its own file again.</summary>
    public TimeSpan? CommitTime => Disk.CommitStartedUtc is { } from && Disk.CommittedUtc is { } to ? to - from : null;

    public override string ToString() => $"{DomainName} {Target} ({Stage})";
}
