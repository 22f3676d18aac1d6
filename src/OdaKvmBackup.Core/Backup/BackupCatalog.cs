using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Backup;

/// <summary>One disk of a backup set, as its manifest describes it.</summary>
public sealed record BackupSetDisk(string Target, string File, string Format, long? SizeBytes, long? DataBytes,
    string? ContentDigest, bool Verified, string Source, string Location);

/// <summary>
/// A backup set found at a destination: what Get-KvmBackup outputs and Test-KvmBackup, Restore-KvmBackup and
/// Remove-KvmBackup take from the pipeline (by type: no property of it binds by name to another cmdlet).
/// </summary>
public sealed class BackupSetInfo
{
    internal BackupSetInfo(string destination, string setFolder, string location, BackupManifest manifest, Func<string, string> describe)
    {
        Destination = destination;
        SetFolder = setFolder;
        Location = location;
        Manifest = manifest;
        Disks = manifest.Disks.Select(d => new BackupSetDisk(d.Target, d.File, d.Format, d.SizeBytes, d.DataBytes,
            d.ContentDigest, d.Verified, d.Source, describe(setFolder + "/" + d.File))).ToList();
    }

    public string DomainName => Manifest.DomainName;
    public string RunId => Manifest.RunId;
    /// <summary>The snapshot time (the moment the set shows), in local time.</summary>
    public DateTime Time => DateTime.SpecifyKind(Manifest.StartedUtc, DateTimeKind.Utc).ToLocalTime();
    public DateTime StartedUtc => DateTime.SpecifyKind(Manifest.StartedUtc, DateTimeKind.Utc);
    public DateTime? CompletedUtc => Manifest.CompletedUtc;
    /// <summary>Complete, Incomplete or InProgress (see backup.json).</summary>
    public string Status => Manifest.Status;
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
    /// <summary>The set's folder: "/backup/vm/20261128-101500" or "root@server:/backup/vm/20261128-101500".</summary>
    public string Location { get; }
    /// <summary>The destination it was found in (the store's root).</summary>
    public string Destination { get; }

    /// <summary>The set's folder relative to <see cref="Destination"/> (domain/run).</summary>
    internal string SetFolder { get; }
    internal BackupManifest Manifest { get; }

    public override string ToString() => $"{DomainName} {RunId} ({Status})";
}

/// <summary>A folder under a destination that looks like a set but whose manifest cannot be read.</summary>
public sealed record UnreadableSet(string Location, BackupException Error);

/// <summary>What a destination holds: the sets, and the folders that look like sets but cannot be read.</summary>
public sealed record CatalogListing(IReadOnlyList<BackupSetInfo> Sets, IReadOnlyList<UnreadableSet> Unreadable);

/// <summary>
/// Finds backup sets in a store: &lt;destination&gt;/&lt;domain&gt;/&lt;run id&gt;/backup.json. Everything is read through
/// <see cref="IBackupStore"/>, so a local folder and an SSH server are listed alike.
/// </summary>
public static class BackupCatalog
{
    /// <summary>Every set under the store's root, sorted by domain, then time (oldest first).</summary>
    public static async Task<CatalogListing> ListAsync(IBackupStore store, Func<string, bool>? domainFilter, CancellationToken ct)
    {
        var sets = new List<BackupSetInfo>();
        var unreadable = new List<UnreadableSet>();
        foreach (var domain in await store.ListAsync("", ct).ConfigureAwait(false))
        {
            if (!domain.IsFolder || domain.Name.StartsWith('.') || domain.Name.Contains('/') || domainFilter?.Invoke(domain.Name) == false)
                continue;
            foreach (var run in await store.ListAsync(domain.Name, ct).ConfigureAwait(false))
            {
                if (!run.IsFolder || !BackupNames.TryParseRunId(run.Name, out _))
                    continue;
                var folder = BackupNames.SetFolder(domain.Name, run.Name);
                try
                {
                    if (await LoadAsync(store, folder, ct).ConfigureAwait(false) is { } set)
                        sets.Add(set);
                }
                catch (BackupException ex) when (ex.ErrorId is ErrorIds.BackupSetUnreadable)
                {
                    unreadable.Add(new UnreadableSet(store.Describe(folder), ex));
                }
            }
        }
        return new CatalogListing(Sort(sets), unreadable);
    }

    /// <summary>The set in a folder of the store, or null when the folder has no backup.json.</summary>
    public static async Task<BackupSetInfo?> LoadAsync(IBackupStore store, string setFolder, CancellationToken ct)
    {
        var manifestPath = BackupSet.ManifestPath(setFolder);
        if (await store.GetEntryAsync(manifestPath, ct).ConfigureAwait(false) is not { IsFolder: false })
            return null;
        var manifest = await BackupSet.LoadAsync(store, setFolder, ct).ConfigureAwait(false);
        return new BackupSetInfo(store.Location, setFolder, store.Describe(setFolder), manifest, store.Describe);
    }

    /// <summary>Sorted as an admin scans them: by domain, then oldest to newest.</summary>
    public static IReadOnlyList<BackupSetInfo> Sort(IEnumerable<BackupSetInfo> sets) =>
        sets.OrderBy(s => s.DomainName, StringComparer.Ordinal).ThenBy(s => s.StartedUtc).ThenBy(s => s.RunId, StringComparer.Ordinal).ToList();

    /// <summary>Keeps the sets with one of <paramref name="statuses"/> (all when empty), then, with
    /// <paramref name="latest"/>, only the newest of each domain.</summary>
    public static IReadOnlyList<BackupSetInfo> Filter(IEnumerable<BackupSetInfo> sets, IReadOnlyCollection<string> statuses, bool latest)
    {
        var kept = sets.Where(s => statuses.Count == 0 || statuses.Contains(s.Status, StringComparer.OrdinalIgnoreCase));
        if (latest)
            kept = kept.GroupBy(s => s.DomainName, StringComparer.Ordinal).Select(g => g.OrderBy(s => s.StartedUtc).ThenBy(s => s.RunId, StringComparer.Ordinal).Last());
        return Sort(kept);
    }

    /// <summary>
    /// Splits what a user typed as a set's folder ("/backup/vm/20261128-101500" or "root@srv:/backup/vm/run")
    /// into the destination (the store's root) and the set folder relative to it. Null when the path does not
    /// end in &lt;domain&gt;/&lt;run id&gt;.
    /// </summary>
    public static (string Destination, string SetFolder)? SplitSetPath(string path)
    {
        var trimmed = path.TrimEnd('/');
        var last = trimmed.LastIndexOf('/');
        if (last <= 0)
            return null;
        var run = trimmed[(last + 1)..];
        var parent = trimmed[..last];
        var domainStart = parent.LastIndexOf('/');
        if (domainStart < 0 || !BackupNames.TryParseRunId(run, out _))
            return null;
        var domain = parent[(domainStart + 1)..];
        var destination = parent[..domainStart];
        if (domain.Length == 0)
            return null;
        if (destination.Length == 0 || destination.EndsWith(':'))
            destination += "/";
        return (destination, BackupNames.SetFolder(domain, run));
    }
}
