namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>A fresh folder under the system temp folder, removed on Dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder(string? prefix = null)
    {
        FullPath = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix ?? "odakvmbackup-tests"}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(FullPath);
    }

    public string FullPath { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([FullPath, .. parts]);

    /// <summary>Creates a sub folder and returns its path.</summary>
    public string Folder(params string[] parts)
    {
        var path = Combine(parts);
        Directory.CreateDirectory(path);
        return path;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(FullPath, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
