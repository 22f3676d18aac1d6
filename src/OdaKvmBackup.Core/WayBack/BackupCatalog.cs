namespace OdaKvmBackup.Core.WayBack;

/// <summary>A folder under a destination that looks like a set but whose manifest cannot be read.</summary>
internal sealed record UnreadableSet(string Location, BackupException Error);

/// <summary>What a destination holds: the sets, and the folders that look like sets but cannot be read.</summary>
/// <remarks>Unreadable is a value, not a throw: one folder with a bad manifest must not hide the other sets; each
/// caller reports it its own way (Get-/Test-KvmBackup as an error, Remove-KvmBackup as a warning, leaving it alone).</remarks>
internal sealed record CatalogListing(IReadOnlyList<BackupSetInfo> Sets, IReadOnlyList<UnreadableSet> Unreadable);

/// <summary>
/// Finds backup sets in a store: &lt;destination&gt;/&lt;domain&gt;/&lt;run id&gt;/backup.json. Everything is read through
/// <see cref="IBackupStore"/>, so a local folder and an SSH server are listed alike.
/// </summary>
internal static class BackupCatalog
{
    /// <summary>Every set under the store's root, sorted by domain, then run id (oldest first); the folders whose
    /// manifest cannot be read or trusted, each with its error.</summary>
    public static async Task<CatalogListing> ListAsync(IBackupStore store, Func<string, bool>? domainFilter, CancellationToken ct)
    {
        var sets = new List<BackupSetInfo>();
        var unreadable = new List<UnreadableSet>();
        // A server's listing may name an entry twice: each folder is read once.
        foreach (var domain in (await store.ListAsync("", ct).ConfigureAwait(false)).DistinctBy(e => e.Name, StringComparer.Ordinal))
        {
            // Folder names come from the store too: only plain names are looked into.
            if (!domain.IsFolder || domain.Name.StartsWith('.') || !FileSystemPaths.IsPlainName(domain.Name) || domainFilter?.Invoke(domain.Name) == false)
                continue;
            foreach (var run in (await store.ListAsync(domain.Name, ct).ConfigureAwait(false)).DistinctBy(e => e.Name, StringComparer.Ordinal))
            {
                if (!run.IsFolder || !BackupNames.TryParseRunId(run.Name, out _))
                    continue;
                var folder = BackupNames.SetFolder(domain.Name, run.Name);
                try
                {
                    if (await LoadAsync(store, folder, ct).ConfigureAwait(false) is { } set)
                        sets.Add(set);
                }
                catch (BackupException ex) when (!Stores.Ssh.SftpConnection.IsConnectionProblem(ex))
                {
                    // One set that cannot be read or trusted never stops the listing of the others.
                    unreadable.Add(new UnreadableSet(store.Describe(folder), ex));
                }
            }
        }
        return new CatalogListing(Sort(sets), unreadable);
    }

    /// <summary>The set in a folder of the store, or null when the folder has no backup.json.</summary>
    public static async Task<BackupSetInfo?> LoadAsync(IBackupStore store, string setFolder, CancellationToken ct)
    {
        var manifestPath = BackupNames.ManifestPath(setFolder);
        if (await store.GetEntryAsync(manifestPath, ct).ConfigureAwait(false) is not { IsFolder: false })
            return null;
        return new BackupSetInfo(store, await BackupSet.LoadAsync(store, setFolder, ct).ConfigureAwait(false));
    }

    /// <summary>Sorted as an admin scans them: by domain, then oldest to newest by run id (the folder's name, never
    /// the time a manifest claims).</summary>
    public static IReadOnlyList<BackupSetInfo> Sort(IEnumerable<BackupSetInfo> sets) =>
        sets.OrderBy(s => s.DomainName, StringComparer.Ordinal).ThenBy(s => s.RunId, StringComparer.Ordinal).ToList();

    /// <summary>Keeps the sets with one of <paramref name="statuses"/> (all when empty), then, with
    /// <paramref name="latest"/>, only the newest of each domain among those not dated in the future: a forged set
    /// dated 2099 (or one written by a host whose clock ran ahead) is never "the latest" a nightly test reads.</summary>
    public static IReadOnlyList<BackupSetInfo> Filter(IEnumerable<BackupSetInfo> sets, IReadOnlyCollection<BackupSetStatus> statuses, bool latest, DateTime nowUtc)
    {
        var kept = sets.Where(s => statuses.Count == 0 || statuses.Contains(s.Manifest.Status));
        if (latest)
            kept = kept.Where(s => !IsInTheFuture(s, nowUtc))
                .GroupBy(s => s.DomainName, StringComparer.Ordinal).Select(g => g.MaxBy(s => s.RunId, StringComparer.Ordinal)!);
        return Sort(kept);
    }

    /// <summary>True when the set's run id names a time ahead of this host's clock (beyond
    /// <see cref="PrunePolicy.ClockTolerance"/>).</summary>
    public static bool IsInTheFuture(BackupSetInfo set, DateTime nowUtc) => set.RunTimeUtc > nowUtc + PrunePolicy.ClockTolerance;

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
