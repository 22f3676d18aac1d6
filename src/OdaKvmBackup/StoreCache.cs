namespace OdaKvmBackup.Commands;

/// <summary>The stores one command opened, one per destination (an SSH store holds a connection), closed when the
/// command ends.</summary>
internal sealed class StoreCache(Func<Core.Host.CliWrapProcessRunner> runner) : IDisposable
{
    private readonly Dictionary<string, IBackupStore> _stores = new(StringComparer.Ordinal);

    /// <param name="location">An SSH destination, or a local path already resolved.</param>
    /// <param name="parameterName">The parameter that named it, for messages.</param>
    public IBackupStore Open(string location, string parameterName)
    {
        if (!_stores.TryGetValue(location, out var store))
            _stores[location] = store = BackupStores.Open(location, runner(), parameterName);
        return store;
    }

    public void Dispose()
    {
        foreach (var store in _stores.Values)
            store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _stores.Clear();
    }
}
