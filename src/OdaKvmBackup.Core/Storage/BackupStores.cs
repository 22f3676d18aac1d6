namespace OdaKvmBackup.Core.Storage;

/// <summary>Opens the store a destination names: a local folder (or NFS mount) for now.</summary>
public static class BackupStores
{
    public static IBackupStore Open(string location, string parameterName = "Destination") =>
        new LocalBackupStore(location) { ParameterName = parameterName };
}
