namespace OdaKvmBackup.Commands;

/// <summary>What a -Path given to Test-KvmBackup or Restore-KvmBackup names: one set (its folder), or, where
/// allowed, every set of a destination (with the folders whose manifest cannot be read or trusted, which the caller
/// reports one by one while it goes on with the others).</summary>
internal static class SetResolver
{
    public static async Task<CatalogListing> ResolveAsync(StoreCache stores, string location, bool allowDestination, CancellationToken ct)
    {
        if (BackupCatalog.SplitSetPath(location) is { } split)
        {
            var store = stores.Open(split.Destination, "Path");
            if (await BackupCatalog.LoadAsync(store, split.SetFolder, ct).ConfigureAwait(false) is { } set)
                return new CatalogListing([set], []);
        }
        if (allowDestination)
        {
            var store = stores.Open(location, "Path");
            if (await store.GetEntryAsync("", ct).ConfigureAwait(false) is { IsFolder: true })
                return await BackupCatalog.ListAsync(store, null, ct).ConfigureAwait(false);
        }
        throw new BackupException(ErrorIds.BackupSetNotFound, BackupErrorCategory.ObjectNotFound,
            $"'{location}' is not a backup set (a <destination>/<domain>/<yyyyMMdd-HHmmss> folder with a backup.json){(allowDestination ? " nor a destination folder" : "")}.",
            "List the sets with Get-KvmBackup -Path <destination> and pipe the one you want, or give its folder as -Path.", location);
    }
}
