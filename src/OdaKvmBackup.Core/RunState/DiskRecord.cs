namespace OdaKvmBackup.Core.RunState;

/// <summary>Where each disk of a run is. A disk moves forward only: Planned, OnOverlay, Copied, Committed, Retained;
/// RolledBack when the run was abandoned.</summary>
internal enum DiskState { Planned, OnOverlay, Copied, Committed, Retained, RolledBack }

/// <summary>One disk of a run, as the journal records it.</summary>
internal sealed class DiskRecord
{
    public required string Target { get; init; }
    /// <summary>The disk's own file: frozen while the domain writes to <see cref="Overlay"/>.</summary>
    public required string Source { get; init; }
    public required string Format { get; init; }
    /// <summary>The overlay the domain writes to during the backup; null for a cold backup.</summary>
    public string? Overlay { get; init; }
    /// <summary>The copy's file name in the backup set (decided by <see cref="BackupNames"/>).</summary>
    public required string SetFile { get; init; }
    /// <summary>The overlay's file name in the retention folder (decided by <see cref="BackupNames"/>).</summary>
    public string? RetainedName { get; init; }

    public DiskState State { get; set; } = DiskState.Planned;
    /// <summary>What qemu-img info said of the disk's virtual size when the run was planned (null when it was not
    /// asked): the set's manifest keeps it, to check a copy against before QEMU reads it.</summary>
    public long? VirtualSizeBytes { get; set; }
    public long? SizeBytes { get; set; }
    public long? DataBytes { get; set; }
    /// <summary>See <see cref="VmDiskBackup.ContentDigest"/>.</summary>
    public string? ContentDigest { get; set; }
    /// <summary>For a copy on another host: see <see cref="CopyResult.SegmentDigests"/>.</summary>
    public SortedDictionary<long, string>? SegmentDigests { get; set; }
    /// <summary>The copy was read back from the destination's storage and matched what was read from the source.</summary>
    public bool Verified { get; set; }
    public string? VerifiedBy { get; set; }
    public string? RetainedOverlay { get; set; }
    public DateTime? CopyStartedUtc { get; set; }
    public DateTime? CopiedUtc { get; set; }
    public DateTime? CommitStartedUtc { get; set; }
    public DateTime? CommittedUtc { get; set; }
}
