namespace OdaKvmBackup.Core.WayBack;

/// <summary>One disk of a backup set, as its manifest describes it. Sets of format OdaKvmBackup/3 (issue 15) also say
/// how the copy was made: <see cref="StoredAs"/> (<c>full</c>, <c>reflink</c>, <c>local copy</c>), the set it was
/// <see cref="BasedOn"/> (information only: the set needs no other), or why it was copied in full
/// (<see cref="FullBecause"/>), and what it cost: bytes read from the disk, sent to the destination, taken from the
/// base by the clone, and sent again because the base's copy of them had rotted. Earlier sets have none of these
/// (null), and a <see cref="ContentDigest"/> instead of <see cref="Digests"/>.</summary>
public sealed record BackupSetDisk(string Target, string File, string Format, long? SizeBytes, long? DataBytes,
    string? ContentDigest, bool Verified, string Source, string Location)
{
    /// <summary>The SHA-256 of the copy's block digest list (the file &lt;File&gt;.digests beside it).</summary>
    public string? Digests { get; init; }
    public string? BasedOn { get; init; }
    public string? StoredAs { get; init; }
    public string? FullBecause { get; init; }
    public long? BytesRead { get; init; }
    public long? BytesSent { get; init; }
    public long? BytesCloned { get; init; }
    public long? BytesResent { get; init; }
}

/// <summary>
/// A backup set found at a destination: what Get-KvmBackup outputs and Test-KvmBackup, Restore-KvmBackup and
/// Remove-KvmBackup take from the pipeline (by type: no property of it binds by name to another cmdlet).
/// </summary>
public sealed class BackupSetInfo
{
    /// <summary>Made only from a checked manifest: a set that is held was checked (see <see cref="CheckedManifest"/>).</summary>
    internal BackupSetInfo(IBackupStore store, CheckedManifest manifest)
    {
        Destination = store.Location;
        Manifest = manifest.Manifest;
        RunTimeUtc = manifest.RunTimeUtc;
        // Checked equal to the folders the set sits in: its identity is the store's layout.
        SetFolder = BackupNames.SetFolder(Manifest.DomainName, Manifest.RunId);
        Location = store.Describe(SetFolder);
        Disks = Manifest.Disks.Select(d => new BackupSetDisk(d.Target, d.File, d.Format, d.SizeBytes, d.DataBytes,
            d.ContentDigest, d.Verified, d.Source, store.Describe(FileInSet(d.File)))
        {
            Digests = d.Digests, BasedOn = d.BasedOn, StoredAs = d.StoredAs, FullBecause = d.FullBecause,
            BytesRead = d.BytesRead, BytesSent = d.BytesSent, BytesCloned = d.BytesCloned, BytesResent = d.BytesResent,
        }).ToList();
    }

    /// <summary>The VM's folder under the destination (its manifest's DomainName is checked to be the same).</summary>
    public string DomainName => Manifest.DomainName;
    /// <summary>The set's folder name, the time of its snapshot in UTC (its manifest's RunId is checked to be the same).</summary>
    public string RunId => Manifest.RunId;
    /// <summary>The snapshot time (the moment the set shows), in local time.</summary>
    public DateTime Time => StartedUtc.ToLocalTime();
    /// <summary>The snapshot time as the manifest says it. Sets are ordered and pruned by <see cref="RunId"/>.</summary>
    public DateTime StartedUtc => CheckedManifest.AsUtc(Manifest.StartedUtc);
    public DateTime? CompletedUtc => Manifest.CompletedUtc;
    /// <summary>Complete, Incomplete or InProgress (see backup.json): the name of the manifest's
    /// <see cref="BackupSetStatus"/>, a string so that ConvertTo-Json writes the word (it writes an enum as a number).
    /// The core reads <see cref="BackupManifest.Status"/>.</summary>
    public string Status => Manifest.Status.ToString();
    /// <summary>Why a set is Incomplete, when the run said.</summary>
    public string? Reason => Manifest.Reason;
    public BackupConsistency Consistency => Manifest.Consistency;
    public string HostName => Manifest.HostName;
    public IReadOnlyList<BackupSetDisk> Disks { get; }
    public IReadOnlyList<ExcludedDisk> ExcludedDisks => Manifest.ExcludedDisks;
    /// <summary>The disks' virtual sizes added up.</summary>
    public long SizeBytes => Disks.Sum(d => d.SizeBytes ?? 0);
    /// <summary>The bytes of data the copies hold (all-zero blocks are not stored).</summary>
    public long DataBytes => Disks.Sum(d => d.DataBytes ?? 0);
    /// <summary>The manifest's Format: OdaKvmBackup/3 (copies described by digest lists), or OdaKvmBackup/2 for sets of
    /// earlier versions.</summary>
    public string Format => Manifest.Format;
    /// <summary>The bytes the run that made the set sent to the destination, all disks together (what changed, for a
    /// set built on an earlier one); null for sets of earlier versions, which do not record it.</summary>
    public long? BytesSent => Disks.Any(d => d.BytesSent is not null) ? Disks.Sum(d => d.BytesSent ?? 0) : null;
    /// <summary>The bytes the run read from the VM's disks, all disks together; null for sets of earlier versions.</summary>
    public long? BytesRead => Disks.Any(d => d.BytesRead is not null) ? Disks.Sum(d => d.BytesRead ?? 0) : null;
    /// <summary>How the copies were stored: <c>full</c>, <c>reflink</c> or <c>local copy</c> when every disk was
    /// stored the same way, <c>mixed</c> when not (each disk's <see cref="BackupSetDisk.StoredAs"/> says); null for sets
    /// of earlier versions (which stored every copy in full).</summary>
    public string? StoredAs => Disks.Select(d => d.StoredAs).Where(s => s is not null).Distinct(StringComparer.Ordinal).ToList() switch
    {
        [] => null,
        [var one] => one,
        _ => "mixed",
    };
    /// <summary>The run id of the set the copies were built from (several, comma-separated, when the disks were based
    /// on different sets); null when every disk was copied in full. Information only: no set needs another.</summary>
    public string? BasedOn => Disks.Select(d => d.BasedOn).Where(b => b is not null).Distinct(StringComparer.Ordinal).ToList() switch
    {
        [] => null,
        var runs => string.Join(", ", runs),
    };
    /// <summary>The set's folder: "/backup/vm/20261128-101500" or "root@server:/backup/vm/20261128-101500".</summary>
    public string Location { get; }
    /// <summary>The destination it was found in (the store's root).</summary>
    public string Destination { get; }

    /// <summary>The set's folder relative to <see cref="Destination"/> (domain/run).</summary>
    internal string SetFolder { get; }
    internal BackupManifest Manifest { get; }
    /// <summary>The time <see cref="RunId"/> names, in UTC: what sets are ordered, aged and pruned by.</summary>
    internal DateTime RunTimeUtc { get; }

    /// <summary>A file of the set, relative to the store's root, proven to lie in the set's folder.</summary>
    internal string FileInSet(string name) => BackupNames.FileInSet(SetFolder, name, Location);

    public override string ToString() => $"{DomainName} {RunId} ({Status})";
}
